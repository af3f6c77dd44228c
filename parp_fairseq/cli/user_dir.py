"""``parp-fairseq-user-dir``: print the path to pass as fairseq's ``common.user_dir``."""

import os


def main() -> int:
    print(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tasks, auto-imported by fairseq's ``import_user_module``."""
from .parp_audio_finetuning import ParpAudioFinetuningConfig, ParpAudioFinetuningTask  # noqa: F401

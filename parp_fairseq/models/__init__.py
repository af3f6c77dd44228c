"""Models, auto-imported by fairseq's ``import_user_module``."""
from .parp_wav2vec2 import ParpWav2Vec2CtcConfig, ParpWav2VecCtc, PruningConfig  # noqa: F401
from .sliced import SlicedWav2Vec2CtcConfig, SlicedWav2VecCtc  # noqa: F401
from .parp_hubert import ParpHubertCtc, SlicedHubertCtc  # noqa: F401
from .families import register_families

register_families()  # data2vec_audio (fairseq/examples/data2vec) for model.w2v_path

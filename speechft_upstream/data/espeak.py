"""eSpeak NG through ctypes: the library and voice data come from the pinned `espeakng-loader` wheel.

No system package is needed: ``espeakng_loader`` (PyPI) bundles ``libespeak-ng.so`` and its
``espeak-ng-data`` (dictionaries, phoneme tables, voice variants). Audio differs between
eSpeak NG versions, so the corpus records the version it was made with.

The library keeps global state, so one process holds one :class:`Engine`.
"""

import ctypes

from speechft_upstream.errors import SpeechFTError

AUDIO_OUTPUT_SYNCHRONOUS = 2
CHARS_UTF8 = 1
ESPEAK_RATE, ESPEAK_VOLUME, ESPEAK_PITCH, ESPEAK_RANGE = 1, 2, 3, 4
PHONEME_SEPARATOR = "_"

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Engine:
    """Synthesis (int16 samples at :attr:`sample_rate`) and text → phoneme conversion."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise SpeechFTError("the espeakng-loader package is not installed (pip install espeakng-loader==0.2.4; "
                                "./run.sh setup installs it)") from None
        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as err:
            raise SpeechFTError(f"cannot load libespeak-ng from espeakng-loader ({err})") from None
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise SpeechFTError(f"eSpeak NG failed to initialise with data from {espeakng_loader.get_data_path()}")
        self.sample_rate = rate
        self.version = lib.espeak_Info(None).decode()
        self._chunks = []

        def collect(samples, count, events):
            if count > 0:
                self._chunks.append(ctypes.string_at(samples, count * 2))
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: the library holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice = None

    def set_voice(self, name, pitch=50, pitch_range=50, rate=175):
        """``name`` like ``en-us+m3``; pitch and range 0–100; rate in words per minute."""
        if name != self._voice:
            if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise SpeechFTError(f"eSpeak NG has no voice {name!r}")
            self._voice = name
        for parameter, value in ((ESPEAK_PITCH, pitch), (ESPEAK_RANGE, pitch_range), (ESPEAK_RATE, rate),
                                 (ESPEAK_VOLUME, 100)):
            self.lib.espeak_SetParameter(parameter, int(value), 0)

    def synth(self, text, seed=None):
        """int16 numpy samples of ``text`` in the current voice.

        Some variants add breath noise from eSpeak NG's random generator: ``seed`` seeds it
        (espeak_ng_SetRandSeed) so that such an utterance is reproducible.
        """
        import numpy as np

        if seed is not None:
            self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, 0, 0, CHARS_UTF8, None, None)
        if status != 0:
            raise SpeechFTError(f"eSpeak NG could not synthesise {text!r} (status {status})")
        return np.frombuffer(b"".join(self._chunks), dtype=np.int16).copy()

    def phonemes(self, text):
        """eSpeak's ASCII phoneme names for ``text``, words as lists, stress and length marks removed.

        Uses the current voice's language (set a voice first).
        """
        words = []
        pointer = ctypes.c_char_p(text.encode("utf-8"))
        mode = ord(PHONEME_SEPARATOR) << 8
        while pointer.value:
            out = self.lib.espeak_TextToPhonemes(ctypes.byref(pointer), CHARS_UTF8, mode)
            if out:
                for word in out.decode("utf-8").split():
                    phones = [p.strip("'`,:") for p in word.split(PHONEME_SEPARATOR)]
                    phones = [p for p in phones if p]
                    if phones:
                        words.append(phones)
        return words

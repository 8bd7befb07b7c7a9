"""``-d asr_ted``: character CTC ASR on TED-LIUM release 3, the Speech-FT authors' fine-tuning task."""

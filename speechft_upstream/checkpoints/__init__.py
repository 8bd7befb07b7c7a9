"""The only room that reads or writes checkpoint files.

``files`` is s3prl's converted format (safe loading, family detection, atomic writes);
``stream`` reads and writes checkpoints tensor by tensor (with ``zipcrc`` and ``sha256``);
``extract``, ``convert`` (+ ``convert_legacy``), ``info`` and ``tiny`` are the format commands;
``hf/`` exports to Hugging Face transformers.
"""

"""Export to Hugging Face transformers: ``config`` builds the HF config, ``weights`` maps names,
``export`` is the command and its atomic folder write."""

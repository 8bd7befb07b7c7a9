"""speechft: Speech-FT (stable fine-tuning + weight-space interpolation) as an s3prl plugin.

Kept import-free on purpose: the startup hook imports this package in every Python process.
"""

__version__ = "0.1.0"

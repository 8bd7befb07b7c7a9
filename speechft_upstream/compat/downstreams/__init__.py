"""Downstreams that s3prl 0.4.18 lacks, imported as ``s3prl.downstream.<name>``.

The startup hook appends this folder to ``s3prl.downstream.__path__`` (``install``), so the
plain runner's ``importlib.import_module(f"s3prl.downstream.{-d}.expert")`` finds them like its
own; s3prl's own downstreams come first and are never shadowed. Import them only under that
name (their relative imports reach s3prl's modules).
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def install(downstream_package):
    path = getattr(downstream_package, "__path__", None)
    if path is not None and HERE not in list(path):
        path.append(HERE)

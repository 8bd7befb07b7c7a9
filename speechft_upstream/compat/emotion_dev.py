"""ER (s3prl's ``emotion``): the dev split gets the corpus's extra dev list, training stays as is.

s3prl 0.4.18 carves its ER dev out of ``Session<N>/train_meta_data.json`` (a seeded
``random_split``, ``valid_ratio`` of it). Any utterance added to that list would reshuffle the
carve and change what the head trains on, so `speechft corpus` writes its extra ER dev
utterances (data/dev_extra.py) to ``Session<N>/dev_meta_data.json`` beside it, and this adds
them to the carved dev: dev = s3prl's dev + that list; train and test are s3prl's own. Without
that file (IEMOCAP, earlier corpora) nothing changes.
"""

import functools
import os

from speechft_upstream.errors import SpeechFTError


def install(module):
    cls = module.DownstreamExpert
    if getattr(cls.__init__, "_speechft", False):
        return
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        extend_dev(self, module)

    __init__._speechft = True
    cls.__init__ = __init__


def extend_dev(expert, module):
    from torch.utils.data import ConcatDataset

    datarc = expert.datarc
    path = os.path.join(datarc["meta_data"], expert.fold.replace("fold", "Session"), "dev_meta_data.json")
    if not os.path.isfile(path):
        return
    extra = module.IEMOCAPDataset(datarc["root"], path, datarc["pre_load"])
    labels = expert.dev_dataset.dataset.class_dict  # the carve is a Subset of the training list
    if extra.class_dict != labels:
        raise SpeechFTError(f"{path}: labels {extra.class_dict} are not those of the training list {labels}")
    carved = len(expert.dev_dataset)
    expert.dev_dataset = ConcatDataset([expert.dev_dataset, extra])
    print(f"[speechft] ER dev: {carved} carved from the training list + {len(extra)} from {path}", flush=True)

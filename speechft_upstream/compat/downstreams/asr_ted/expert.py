"""``-d asr_ted``: s3prl's asr expert (CTC head, greedy decoding, WER) on TED-LIUM 3 segments.

Everything but the data and the vocabulary is s3prl's ``downstream/asr`` expert: projector,
``modelrc`` head (the authors: 3 x 256 BLSTM, project_dim 256), CTC loss, greedy decoding,
word error rate over words. The vocabulary is written here, not downloaded: the 32 tokens of
``facebook/wav2vec2-base-960h`` in its order (the authors' tokenizer), fairseq's four specials
first, so the CTC blank is index 0 as in theirs, then ``|`` (word boundary), E T A O N ... Z.

Splits are ``train``, ``dev`` (dev-best.ckpt by WER) and ``test``.

The authors' expert measured "WER" as an edit distance over the characters of the decoded
strings (their target and hypothesis are strings, not word lists); this one counts words.
"""

import torch
import torch.nn as nn

from ..asr import expert as asr_expert
from ..asr.dictionary import Dictionary
from .dataset import TedliumDataset

# wav2vec2-base-960h's characters after <pad> <s> </s> <unk>, in its vocabulary order
CHARACTERS = tuple("|ETAONIHSRDLUMWCFGYPBVK'XJQZ")


def vocabulary():
    dictionary = Dictionary()  # <s> <pad> </s> <unk> = 0 1 2 3; <s> (bos) is the blank
    for symbol in CHARACTERS:
        dictionary.add_symbol(symbol)
    return dictionary


class DownstreamExpert(asr_expert.DownstreamExpert):
    def __init__(self, upstream_dim, upstream_rate, downstream_expert, expdir, **kwargs):
        nn.Module.__init__(self)  # as the asr expert's, with our vocabulary instead of a dict file
        self.upstream_dim = upstream_dim
        self.upstream_rate = upstream_rate
        self.datarc = downstream_expert["datarc"]
        self.modelrc = downstream_expert["modelrc"]
        self.expdir = expdir
        self.dictionary = vocabulary()
        self.projector = nn.Linear(upstream_dim, self.modelrc["project_dim"])
        model_cls = getattr(asr_expert, self.modelrc["select"])
        self.model = model_cls(self.modelrc["project_dim"], len(self.dictionary.symbols), upstream_rate,
                               **self.modelrc[self.modelrc["select"]])
        self.blank = self.dictionary.bos()
        self.objective = nn.CTCLoss(blank=self.blank, zero_infinity=self.datarc["zero_infinity"])
        self.decoder = None  # greedy CTC decoding, no LM
        self.register_buffer("best_score", torch.ones(1) * 100)

    def get_dataloader(self, split):
        if not hasattr(self, f"{split}_dataset"):
            bucket = self.datarc["batch_size"] if split == "train" else self.datarc["eval_batch_size"]
            setattr(self, f"{split}_dataset", TedliumDataset(split, bucket, self.dictionary, **self.datarc))
        dataset = getattr(self, f"{split}_dataset")
        return self._get_train_dataloader(dataset) if split == "train" else self._get_eval_dataloader(dataset)

    def log_records(self, split, records, logger, global_step, batch_ids, total_batch_num, **kwargs):
        names = super().log_records(split, records, logger, global_step, batch_ids, total_batch_num, **kwargs)
        if split == "dev":  # the asr expert keeps its best by the name dev-clean
            _, wer = self._compute_metrics(records["pred_tokens"], records["pred_words"],
                                           records["target_tokens"], records["target_words"])
            if wer < self.best_score:
                self.best_score = torch.ones(1) * wer
                names.append("dev-best.ckpt")
        return names

"""catalyst 21.5 does not import on Python >= 3.10 (collections.MutableMapping is gone), and
s3prl's speech_commands (KS) downstream imports one class from it. This supplies that class
when, and only when, the real catalyst cannot be imported.
"""

import sys


def install():
    """catalyst.data.sampler.DistributedSamplerWrapper without catalyst, if catalyst won't import."""
    try:
        from catalyst.data.sampler import DistributedSamplerWrapper  # noqa: F401
        return
    except Exception:  # catalyst 21.5 on Python >= 3.10 dies at import
        pass
    import types

    from torch.utils.data import Dataset, DistributedSampler

    class _FromSampler(Dataset):
        def __init__(self, sampler):
            self.indices = list(sampler)

        def __getitem__(self, index):
            return self.indices[index]

        def __len__(self):
            return len(self.indices)

    class DistributedSamplerWrapper(DistributedSampler):
        """Each process takes its share of a fresh draw of the wrapped sampler (catalyst's semantics)."""

        def __init__(self, sampler, num_replicas=None, rank=None, shuffle=True):
            super().__init__(_FromSampler(sampler), num_replicas=num_replicas, rank=rank, shuffle=shuffle)
            self.sampler = sampler

        def __iter__(self):
            self.dataset = _FromSampler(self.sampler)
            return iter([self.dataset[i] for i in super().__iter__()])

    for name in ("catalyst", "catalyst.data", "catalyst.data.sampler"):
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
    package = types.ModuleType("catalyst", "stand-in: catalyst does not import on this Python")
    data = types.ModuleType("catalyst.data")
    sampler = types.ModuleType("catalyst.data.sampler")
    sampler.DistributedSamplerWrapper = DistributedSamplerWrapper
    package.__path__, data.__path__ = [], []
    package.data, data.sampler = data, sampler
    sys.modules.update({"catalyst": package, "catalyst.data": data, "catalyst.data.sampler": sampler})

"""Multi-process training through torchrun with s3prl's own runner.

    torchrun --nproc_per_node N -m speechft_upstream.launch <run_downstream arguments>

s3prl 0.4.18 enables DDP only when ``--local_rank`` is on its command line (what the deprecated
torch.distributed.launch passed); torchrun sets the LOCAL_RANK variable instead, identical
arguments for every process. This entry adds ``--local_rank $LOCAL_RANK`` and runs the
unmodified ``s3prl.run_downstream``. For ``--device cpu`` it also defaults ``--backend`` to
gloo (s3prl defaults to nccl, GPU only) and skips the runner's ``torch.cuda.set_device``, which
a CPU build of torch cannot do; speechft's compat layer lets the runner wrap CPU modules in DDP.
"""

import os
import runpy
import sys


def _value(argv, flag):
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        print("speechft: error: speechft_upstream.launch runs under torchrun "
              "(LOCAL_RANK is not set); for one process use python -m s3prl.run_downstream", file=sys.stderr)
        return 2
    if _value(argv, "--local_rank") is None:
        argv += ["--local_rank", local_rank]
    if _value(argv, "--device") == "cpu":
        if _value(argv, "--backend") is None:
            argv += ["--backend", "gloo"]
        import torch

        torch.cuda.set_device = lambda device: None  # this process only: there is no GPU to pick
    sys.argv = ["run_downstream.py", *argv]
    runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

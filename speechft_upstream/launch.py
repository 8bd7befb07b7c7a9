"""`python -m speechft_upstream.launch`: the documented torchrun entry, kept at this path.

The launcher lives in ``speechft_upstream.upstream.launch``; see its docstring.
"""

import sys

from speechft_upstream.upstream.launch import main

if __name__ == "__main__":
    sys.exit(main())

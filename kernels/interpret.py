"""Whether the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported): on the
CPU with numpy, with small fixed blocks and no autotuning. The interpreter gets bf16 ``tl.dot`` wrong (relative
error ~1e9, triton 3.6 and 3.9), so tests there use fp16 and fp32 and bf16 is tested on a GPU."""

import os

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

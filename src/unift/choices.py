"""The allowed values of every enumerated setting, in one place.

The config (`unift.config`) offers them as field choices and rejects anything else with a
one-line error; the pure modules that branch on them (`unift.rl.policy_loss`,
`unift.rl.advantages`, ...) import them from here, so no list is written twice. A leaf module:
it imports nothing of unift's.
"""

METHODS = ("sft", "dft", "rft", "uft", "r3")
OFFLINE_METHODS = ("sft", "dft")
HINT_SCHEDULES = ("cosine", "uniform", "staged", "adaptive", "none")
HINT_LOSSES = ("nll", "dft")
TEMPLATES = ("auto", "plain", "chat")
PRECISIONS = ("auto", "bf16", "fp32")
PROTOCOLS = ("official", "unift")
NORMALIZERS = ("unift", "official")
AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "dr-grpo")
SCALES = ("group", "batch", "none")
LR_SCHEDULES = ("cosine", "constant", "linear")
ROLLOUT_BACKENDS = ("hf", "vllm")
STRATEGIES = ("ddp", "fsdp2")

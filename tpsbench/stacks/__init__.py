"""The training stacks tpsbench can build a zoo model in: its own modules (tpsbench.nn) and the users' OLMo-core
(an optional extra: ``pip install -e ".[olmo]"``)."""

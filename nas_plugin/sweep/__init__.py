"""The sweep loop's collaborators, each with one job and none of them Hydra-facing.

``plan`` (config + command line -> a validated plan), ``sweep_dir`` (multirun.yaml), ``start``
(resume or start the parent run, warm start), ``proposals`` (ask the strategy, drop duplicates,
pre-screen), ``prescreen`` (pool -> top k), ``search_aids`` (pre-screen and predictor records in
MLflow), ``trials`` (number, compose, launch and settle trials), ``ledger`` (book finished
trials, tell the strategy), ``loop`` (batches), ``refill`` (asynchronous refill), ``rungs``
(Hyperband), ``replay`` (an exact resume), ``oneshot_phase`` (search before training),
``finish`` (leaderboard, registry), ``plots`` (PNGs on the parent run).
:mod:`nas_plugin.sweeper` wires them to Hydra.
"""

"""MLflow tag names and trial statuses shared by the job side, the pruner and the sweeper.

A leaf module (no imports): the pruner's channel reads them without importing the trial wrapper,
which imports the pruner (that was an import cycle).
"""

# Tag names shared by the job side and the sweeper side.
TAG_TRIAL = "nas.trial"
TAG_STATUS = "nas.status"
TAG_STRATEGY = "nas.strategy"
TAG_ESTIMATOR = "nas.estimator"
TAG_ENCODING = "nas.encoding"
TAG_ERROR = "nas.error"
TAG_MODEL_URI = "nas.model_uri"
TAG_WORKER = "nas.worker"
STATUS_RUNNING, STATUS_OK, STATUS_FAILED = "running", "ok", "failed"
# Stopped early by the pruner (hydra.sweeper.pruner); the run is FINISHED, with its last value.
STATUS_PRUNED = "pruned"

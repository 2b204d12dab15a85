# Generic helpers: the validated config, wildcard constraints, resources, and the adapters
# that let a rule take its inputs and settings from a stage's spec (medaug.stage.Spec).
import sys

sys.path.insert(0, workflow.basedir)

from medaug import paths
from medaug.caches import redirect_caches
from medaug.errors import ConfigError
from medaug.papers import (
    PAPERS,
    all_targets,
    stand_in_problems,
    targets,
    validate_config,
)

# matplotlib, torch, Snakemake & co. cache under ./.cache, not ~ (the jobs inherit this).
redirect_caches()

# Validate before anything else; fills in every default the schema documents.
_validated = validate_config(config)
config.clear()
config.update(_validated)
# Never paper scale on generated data or random weights without saying so (demo.allow_stand_ins).
if _stand_ins := stand_in_problems(config):
    raise ConfigError("\n".join(_stand_ins))


wildcard_constraints:
    paper="|".join(PAPERS),
    dataset="|".join(config["datasets"]),
    fold=r"\d+",
    ratio=r"\d+",
    seed=r"\d+",


def scaled_by_attempt(base):
    """A resource that grows with each retry (a job killed at its memory or time limit)."""
    return lambda wildcards, attempt: base * attempt


def stage_inputs(spec):
    """Input function: the stage's named inputs for a job's wildcards."""
    return lambda wildcards: spec.inputs(config, dict(wildcards.items()))


def stage_settings(spec):
    """Params function: the stage's settings for a job's wildcards (the params trigger
    reruns a job exactly when these change)."""
    return lambda wildcards: spec.settings(config, dict(wildcards.items()))

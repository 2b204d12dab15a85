"""medaug: diffusion-model data augmentation for medical imaging, reproduced end to end.

The package holds the logic; ``scripts/*.py`` adapt Snakemake jobs to it. Submodules
import their heavy dependencies themselves so that ``medaug.config`` stays cheap to
import from the Snakefile.
"""

__version__ = "0.1.0"

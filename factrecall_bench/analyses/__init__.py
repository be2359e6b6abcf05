"""The paper's mechanism analyses on a finished run (docs/analyses.md): grafting (the smallest set
of trained parameters that recovers the run's recall), representation consistency between the
storage and query forms of a fact, and what the model reads when it predicts a value.

Modules: grafting and mask_learning, representation, reads (each a settings dataclass and small
functions on any model); run, the glue that loads a run and writes analyses.json (imported by the
CLI only, as it pulls in the runner).
"""

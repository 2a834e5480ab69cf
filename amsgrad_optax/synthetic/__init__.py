"""The paper's synthetic experiments (Section 5), each run compiled in one call.

Problems (:func:`online`, :func:`stochastic`, :func:`theorem1`), a runner for
any optax transformation (:func:`run`, and the pure :func:`simulate`: one
``lax.scan``, or for the optimizers :func:`make_optimizer` builds, a blocked,
time-parallel engine; see :data:`ENGINES`), grids of hyperparameters and
seeds as one vmapped or batched, sharded call (:func:`sweep`, and over
Theorem 1's C as well, :func:`theorem1_sweep`), the paper's Figure 1 with
its settings (:func:`figure1`; any runs: :func:`plot_runs`), Theorem 1 as a
phase map of the (C, b2) plane (:func:`theorem1_phase_map`), and the
``amsgrad-synthetic`` command line.
"""

from amsgrad_optax.synthetic._figures import ALPHA_GRID as ALPHA_GRID
from amsgrad_optax.synthetic._figures import choose_alpha as choose_alpha
from amsgrad_optax.synthetic._figures import figure1 as figure1
from amsgrad_optax.synthetic._figures import log_traces as log_traces
from amsgrad_optax.synthetic._figures import theorem1_boundary as theorem1_boundary
from amsgrad_optax.synthetic._figures import theorem1_drift as theorem1_drift
from amsgrad_optax.synthetic._figures import theorem1_phase_map as theorem1_phase_map
from amsgrad_optax.synthetic._figures import theorem1_quoted_bound as theorem1_quoted_bound
from amsgrad_optax.synthetic._optimizers import LR_SCHEDULES as LR_SCHEDULES
from amsgrad_optax.synthetic._optimizers import OPTIMIZERS as OPTIMIZERS
from amsgrad_optax.synthetic._optimizers import SyntheticOptimizer as SyntheticOptimizer
from amsgrad_optax.synthetic._optimizers import make_optimizer as make_optimizer
from amsgrad_optax.synthetic._plot import plot_runs as plot_runs
from amsgrad_optax.synthetic._problems import PROBLEMS as PROBLEMS
from amsgrad_optax.synthetic._problems import OnlineProblem as OnlineProblem
from amsgrad_optax.synthetic._problems import Problem as Problem
from amsgrad_optax.synthetic._problems import StochasticProblem as StochasticProblem
from amsgrad_optax.synthetic._problems import make_problem as make_problem
from amsgrad_optax.synthetic._problems import online as online
from amsgrad_optax.synthetic._problems import stochastic as stochastic
from amsgrad_optax.synthetic._problems import theorem1 as theorem1
from amsgrad_optax.synthetic._problems import theorem1_betas as theorem1_betas
from amsgrad_optax.synthetic._runner import ENGINES as ENGINES
from amsgrad_optax.synthetic._runner import RunResult as RunResult
from amsgrad_optax.synthetic._runner import Simulation as Simulation
from amsgrad_optax.synthetic._runner import Trace as Trace
from amsgrad_optax.synthetic._runner import run as run
from amsgrad_optax.synthetic._runner import simulate as simulate
from amsgrad_optax.synthetic._sweep import HYPERPARAMETERS as HYPERPARAMETERS
from amsgrad_optax.synthetic._sweep import sweep as sweep
from amsgrad_optax.synthetic._sweep import table_rows as table_rows
from amsgrad_optax.synthetic._sweep import theorem1_sweep as theorem1_sweep

__all__ = (
  "ALPHA_GRID",
  "ENGINES",
  "HYPERPARAMETERS",
  "LR_SCHEDULES",
  "OPTIMIZERS",
  "OnlineProblem",
  "PROBLEMS",
  "Problem",
  "RunResult",
  "Simulation",
  "StochasticProblem",
  "SyntheticOptimizer",
  "Trace",
  "choose_alpha",
  "figure1",
  "log_traces",
  "make_optimizer",
  "make_problem",
  "online",
  "plot_runs",
  "run",
  "simulate",
  "stochastic",
  "sweep",
  "table_rows",
  "theorem1",
  "theorem1_betas",
  "theorem1_boundary",
  "theorem1_drift",
  "theorem1_phase_map",
  "theorem1_quoted_bound",
  "theorem1_sweep",
)

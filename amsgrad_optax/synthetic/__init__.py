"""The paper's synthetic experiments (Section 5), each run compiled in one call.

Problems (:func:`online`, :func:`stochastic`, :func:`theorem1`), a runner for
any optax transformation (:func:`run`, and the pure :func:`simulate`: one
``lax.scan``, or for the optimizers :func:`make_optimizer` builds, a blocked,
time-parallel engine; see :data:`ENGINES`), grids of hyperparameters and
seeds as one vmapped or batched, sharded call (:func:`sweep`),
the paper's Figure 1 (:func:`plot_runs`), and the ``amsgrad-synthetic``
command line.
"""

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

__all__ = (
  "ENGINES",
  "HYPERPARAMETERS",
  "LR_SCHEDULES",
  "OPTIMIZERS",
  "PROBLEMS",
  "OnlineProblem",
  "Problem",
  "RunResult",
  "Simulation",
  "StochasticProblem",
  "SyntheticOptimizer",
  "Trace",
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
)

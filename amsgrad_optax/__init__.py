"""AMSGrad (Reddi, Kale & Kumar, ICLR 2018) as optax gradient transformations."""

from amsgrad_optax._alias import adamnc as adamnc
from amsgrad_optax._alias import amsgrad as amsgrad
from amsgrad_optax._checkpoint import restore_state as restore_state
from amsgrad_optax._conventions import CONVENTIONS as CONVENTIONS
from amsgrad_optax._conventions import Convention as Convention
from amsgrad_optax._conventions import get_convention as get_convention
from amsgrad_optax._diagnostics import diagnostics as diagnostics
from amsgrad_optax._fused import FusedAmsgrad as FusedAmsgrad
from amsgrad_optax._fused import fused_amsgrad as fused_amsgrad
from amsgrad_optax._robust import SkipNonfiniteState as SkipNonfiniteState
from amsgrad_optax._robust import skip_nonfinite as skip_nonfinite
from amsgrad_optax._schedules import inverse_sqrt_schedule as inverse_sqrt_schedule
from amsgrad_optax._sharding import shard_state as shard_state
from amsgrad_optax._sharding import state_sharding as state_sharding
from amsgrad_optax._transform import ScaleByAdamncState as ScaleByAdamncState
from amsgrad_optax._transform import ScaleByAmsgradState as ScaleByAmsgradState
from amsgrad_optax._transform import scale_by_adamnc as scale_by_adamnc
from amsgrad_optax._transform import scale_by_amsgrad as scale_by_amsgrad

__version__ = "0.1.0"

__all__ = (
  "CONVENTIONS",
  "Convention",
  "FusedAmsgrad",
  "ScaleByAdamncState",
  "ScaleByAmsgradState",
  "SkipNonfiniteState",
  "adamnc",
  "amsgrad",
  "diagnostics",
  "fused_amsgrad",
  "get_convention",
  "inverse_sqrt_schedule",
  "restore_state",
  "scale_by_adamnc",
  "scale_by_amsgrad",
  "shard_state",
  "skip_nonfinite",
  "state_sharding",
)

"""AMSGrad (Reddi, Kale & Kumar, ICLR 2018) as optax gradient transformations."""

from amsgrad_optax._adamx import scale_by_adamx as scale_by_adamx
from amsgrad_optax._alias import adamnc as adamnc
from amsgrad_optax._alias import adamx as adamx
from amsgrad_optax._alias import amsgrad as amsgrad
from amsgrad_optax._checkpoint import check_state_values as check_state_values
from amsgrad_optax._checkpoint import read_checkpoint_config as read_checkpoint_config
from amsgrad_optax._checkpoint import restore_checkpoint as restore_checkpoint
from amsgrad_optax._checkpoint import restore_state as restore_state
from amsgrad_optax._checkpoint import save_checkpoint as save_checkpoint
from amsgrad_optax._config import AmsgradConfig as AmsgradConfig
from amsgrad_optax._config import amsgrad_config as amsgrad_config
from amsgrad_optax._conventions import CONVENTIONS as CONVENTIONS
from amsgrad_optax._conventions import Convention as Convention
from amsgrad_optax._conventions import get_convention as get_convention
from amsgrad_optax._diagnostics import diagnostics as diagnostics
from amsgrad_optax._fused import FusedAmsgrad as FusedAmsgrad
from amsgrad_optax._fused import flatten_state as flatten_state
from amsgrad_optax._fused import fused_amsgrad as fused_amsgrad
from amsgrad_optax._fused import unflatten_state as unflatten_state
from amsgrad_optax._quantize import QuantizedArray as QuantizedArray
from amsgrad_optax._quantize import dequantize as dequantize
from amsgrad_optax._robust import SkipNonfiniteState as SkipNonfiniteState
from amsgrad_optax._robust import skip_nonfinite as skip_nonfinite
from amsgrad_optax._schedules import inverse_sqrt_schedule as inverse_sqrt_schedule
from amsgrad_optax._sharding import shard_state as shard_state
from amsgrad_optax._sharding import state_sharding as state_sharding
from amsgrad_optax._transform import ScaleByAdamncState as ScaleByAdamncState
from amsgrad_optax._transform import ScaleByAmsgradState as ScaleByAmsgradState
from amsgrad_optax._transform import scale_by_adamnc as scale_by_adamnc
from amsgrad_optax._transform import scale_by_amsgrad as scale_by_amsgrad

__version__ = "0.2.0.dev0"

__all__ = (
  "AmsgradConfig",
  "CONVENTIONS",
  "Convention",
  "FusedAmsgrad",
  "QuantizedArray",
  "ScaleByAdamncState",
  "ScaleByAmsgradState",
  "SkipNonfiniteState",
  "adamnc",
  "adamx",
  "amsgrad",
  "amsgrad_config",
  "check_state_values",
  "dequantize",
  "diagnostics",
  "flatten_state",
  "fused_amsgrad",
  "get_convention",
  "inverse_sqrt_schedule",
  "read_checkpoint_config",
  "restore_checkpoint",
  "restore_state",
  "save_checkpoint",
  "scale_by_adamnc",
  "scale_by_adamx",
  "scale_by_amsgrad",
  "shard_state",
  "skip_nonfinite",
  "state_sharding",
  "unflatten_state",
)

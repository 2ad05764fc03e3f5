"""The SparX connection mechanism, independent of the token mixer: the ganglion plan, the stage that
follows it and the DMCA that ganglion layers run."""
from .dmca import DMCA, LEARNABLE_SCALE_INIT, channel_attention
from .ganglion import STAGE_INPUT, GanglionPlan, ganglion_plan
from .stage import GanglionStage

__all__ = ['DMCA', 'LEARNABLE_SCALE_INIT', 'channel_attention', 'STAGE_INPUT', 'GanglionPlan',
           'ganglion_plan', 'GanglionStage']

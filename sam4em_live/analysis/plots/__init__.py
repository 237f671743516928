"""Drawing parts of the analysis figures: readable log ticks, units and lag axes, the figures themselves."""

"""The thresholds a module's measurements are judged by: one place, so the advisor and the app agree.

The snapshot lists the modules past them, the offline rules diagnose from them, and the
app marks the same modules in its layer table and draws the same guide line. Each value
says where it comes from. Plain numbers; no imports.
"""

# A module's gradient norm below 1e-7 is vanishing, above 1e3 (or any non-finite value)
# exploding, more than 10x the run's median a spike. 1e-7 and "any non-finite value
# means explosion" are the published study's rules (issue 3); vanishing and exploding
# gradients as a function of depth: Glorot and Bengio 2010, Pascanu et al. 2013, who also
# introduced clipping the norm for the spikes the 10x rule catches.

VANISHING_GRAD_NORM = 1e-7
EXPLODING_GRAD_NORM = 1e3
SPIKE_FACTOR = 10.0

# Update-to-weight ratio per step: about 1e-3 is healthy; far below it nothing learns, far
# above it the weights are rewritten every step. Karpathy, CS231n "Neural Networks Part 3:
# ratio of weights:updates" (~1e-3); the bounds 1e-5 and 1e-1 are two decades either side.
UPDATE_RATIO_GUIDE = 1e-3
UPDATE_RATIO_LOW = 1e-5
UPDATE_RATIO_HIGH = 1e-1

# More than half of a ReLU layer's units never firing: CS231n "Neural Networks Part 1"
# (as much as 40% of a network can be dead with too high a learning rate); 50% from issue 3.
DEAD_RELU_FRACTION = 0.5
# More than 30% of sigmoid/tanh outputs in their flat tails (LeCun et al. 1998 "Efficient
# BackProp"; Glorot and Bengio 2010 on saturated top layers); 30% from issue 3.
SATURATED_FRACTION = 0.3

# A training loss above this many times what guessing costs (ln of the class count) has blown
# up: the snapshot dates the first blow-up by it, the rules diagnose divergence and an exploded rate.
DIVERGENCE_FACTOR = 1.5

"""fastsam2.tools: the command lines and the runs built from every room (tracking, evaluation, labelling,
benchmarks, training); the top room, which may import all the others."""

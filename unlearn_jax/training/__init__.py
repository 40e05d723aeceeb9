"""Training: the train state, the stateless step, sharding over a mesh, the loop, classifiers."""

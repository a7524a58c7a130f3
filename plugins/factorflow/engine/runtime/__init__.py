"""What a fit needs from JAX at run time: the compilation cache, the backend's start and stored programs."""

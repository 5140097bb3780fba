"""A local imitation of Runware's REST API for FLUX.2 [pro], the far side of fluxfarm's provider."""

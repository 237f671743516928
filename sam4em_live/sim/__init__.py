"""LPTEM video simulator with exact ground truth.

Bright-field Beer–Lambert forward model of nanoparticles in a liquid cell, with
Poisson shot noise, a detector MTF and particle motion (Brownian, fractional
Brownian, heavy-tailed hops, scripted paths, CSV trajectories, rotational
diffusion). Reimplemented from the physics described by Yao et al., ACS Cent.
Sci. 6, 1421 (2020); see docs/simulator.md.

Modules: `spec` (frozen configuration), `shapes` (projected thickness maps),
`optics` (Beer–Lambert, MTF, noise, CNR), `motion` (trajectories), `presets`,
`video` (frame generation, `simulate_video`, `make_prompts`), `outputs`
(files on disk), `commands` (CLI).
"""

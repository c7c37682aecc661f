//! Privileged tests of keel-update (root: loop devices, a real nginx).

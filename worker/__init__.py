"""The tactical-marl worker: SYNERGY_DETECTED events in, decisions and execution commands out."""

from conferprint.fingerprint.artifact import Fingerprint, FingerprintError, load_fingerprint, save_fingerprint
from conferprint.fingerprint.baselines import PGD, iterative_gradient_attack
from conferprint.fingerprint.cem import CEM
from conferprint.fingerprint.cigm import CIGM
from conferprint.fingerprint.generate import GenerationError
from conferprint.fingerprint.scores import confer, soft_conferrability, transfer

__all__ = ["CEM", "CIGM", "PGD", "Fingerprint", "FingerprintError", "GenerationError", "load_fingerprint", "save_fingerprint",
           "iterative_gradient_attack", "confer", "transfer", "soft_conferrability"]

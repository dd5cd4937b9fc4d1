"""conferprint — fingerprint image classifiers with conferrable adversarial examples (Lukas et al., ICLR 2021)."""
__version__ = "0.1.0"

"""rlbound: did RL give a model new reasoning, or only sharpen what its base model could sample?"""

__version__ = "0.1.0"

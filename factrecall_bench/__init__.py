"""factrecall-bench: does a training recipe teach knowledge, or only memorize?"""

__version__ = "0.1.0"

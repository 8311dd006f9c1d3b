"""The bundled sample corpus and the tiny GPT-2 trained on it, for the demo and the tests."""

"""The error a bad configuration raises."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        problem = " ".join(problem.splitlines())  # one line, even when it quotes another error's message
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem

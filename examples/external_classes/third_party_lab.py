"""Classes you cannot (or do not want to) edit: no Ether imports, no decorators.

The YAML `registry:` in config.yaml turns their methods into topics.
"""

import os


class DataGenerator:
    def __init__(self, process_id: int = 0):
        self.process_id = process_id

    def generate_data(self, data: int = 42) -> dict:
        print(f"DataGenerator[PID {os.getpid()}] #{self.process_id}: Generating data - {data}")
        return {"data": data}


class DataProcessor:
    def __init__(self, multiplier: int = 2):
        self.multiplier = multiplier

    def process_data(self, data: int = 0) -> dict:
        result = data * self.multiplier
        print(f"DataProcessor[PID {os.getpid()}]: Processed {data} -> {result}")
        return {"result": result}


class DataCollector:
    def __init__(self):
        self.results = []

    def collect_result(self, result: int) -> None:
        self.results.append(result)
        print(f"DataCollector[PID {os.getpid()}]: Collected result - {result}")

"""The original Ether README's pipeline: a generator, processors with different multipliers, a collector."""

import os

from ether import ether_pub, ether_start, ether_sub


class DataGenerator:
    """Produces the initial data."""

    @ether_start()
    @ether_pub(topic="data")
    def generate_data(self, data: int = 42) -> dict:
        print(f"DataGenerator[PID {os.getpid()}]: Generating data - {data}")
        return {"data": data}


class DataProcessor:
    """Multiplies the data; run several instances with different multipliers."""

    def __init__(self, multiplier: int = 2):
        self.multiplier = multiplier

    @ether_sub(topic="data")
    @ether_pub(topic="result")
    def process_data(self, data: int = 0) -> dict:
        print(f"DataProcessor[PID {os.getpid()}]: Processing input data - {data}")
        result = data * self.multiplier
        print(f"DataProcessor[PID {os.getpid()}]: Processed output result - {result}")
        return {"result": result}


class DataCollector:
    """Collects results and summarises them."""

    def __init__(self):
        self.results = []

    @ether_sub(topic="result")
    @ether_pub(topic="summarize")
    def collect_result(self, result: int) -> None:
        self.results.append(result)
        print(f"DataCollector[PID {os.getpid()}]: Collected result - {result}")

    @ether_sub(topic="summarize")
    def summarize(self) -> None:
        mean = sum(self.results) / len(self.results)
        print(
            f"DataCollector[PID {os.getpid()}]: Summarizing results - "
            f"mean: {mean}, max: {max(self.results)}, min: {min(self.results)}"
        )

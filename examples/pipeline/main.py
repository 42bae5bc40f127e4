"""Run the pipeline with Ether, then use the same classes directly (transparent fallback)."""

from pathlib import Path

from lab_pipeline import DataCollector, DataGenerator, DataProcessor

from ether import ether

ether.tap(config=Path(__file__).with_name("config.yaml"))
ether.start()  # returns once every @ether_start method has run
ether.shutdown()  # save_all -> cleanup -> exit, each acknowledged

# After shutdown the classes are plain Python again: no network, same results.
generator = DataGenerator()
processor2x = DataProcessor(multiplier=2)
processor4x = DataProcessor(multiplier=4)
collector = DataCollector()

generated = generator.generate_data(data=4242)
collector.collect_result(**processor2x.process_data(**generated))
collector.collect_result(**processor4x.process_data(**generated))
collector.summarize()

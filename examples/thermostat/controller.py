"""The host side: a thermostat that keeps the room between target - band and target + band."""

from ether import ether, ether_pub, ether_sub

DEVICE = "thermo1"


class Thermostat:
    def __init__(self, target: float = 20.0, band: float = 0.5):
        self.target, self.band = target, band

    @ether_sub(topic=f"{DEVICE}.temperature")  # the board's readings, validated from these type hints
    def on_temperature(self, temperature: float, heater: bool) -> None:
        if not heater and temperature < self.target - self.band:
            self.switch(True, temperature)
        elif heater and temperature > self.target + self.band:
            self.switch(False, temperature)

    @ether_pub(topic="thermostat.switched")  # recorded, with the reading that caused it as parent
    def switch(self, on: bool, temperature: float) -> dict:
        confirmed = ether.devices[DEVICE].set_heater(on=on)  # the board's answer, or a typed error
        print(f"Thermostat: {temperature:.2f} C -> heater {'on' if confirmed else 'off'}", flush=True)
        return {"on": confirmed, "temperature": temperature}

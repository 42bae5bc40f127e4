"""The network on CircuitPython: adafruit_minimqtt behind the same few methods as ether_lite.mqtt.

minimqtt waits for each QoS 1 PUBACK inside publish(), so `unacked` stays empty here; its own errors
(MMQTTException) are turned into OSError, the one error the node catches.
"""

import time

from adafruit_minimqtt.adafruit_minimqtt import MQTT, MMQTTException


class MiniMQTTClient:
    def __init__(self, client_id, server, port, user, password, keepalive, pool):
        if pool is None:
            import socketpool
            import wifi

            pool = socketpool.SocketPool(wifi.radio)
        self.unacked = []
        self.cb = None
        self.mqtt = MQTT(
            broker=server,
            port=port,
            username=user,
            password=password,
            client_id=client_id,
            is_ssl=False,
            keep_alive=keepalive,
            socket_pool=pool,
            socket_timeout=0.01,  # loop() may block this long: poll() stays quick
            recv_timeout=5,
            connect_retries=1,  # the node does the backing off
        )
        self.mqtt.on_message = lambda client, topic, msg: self.cb(topic, msg)

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        if not self.mqtt.is_connected():
            self.mqtt.will_set(topic, msg, qos, retain)

    def _do(self, action, *args):
        try:
            return action(*args)
        except (MMQTTException, RuntimeError) as e:
            self.close()
            raise OSError(str(e))
        except OSError:
            self.close()
            raise

    def connect(self):
        self._do(self.mqtt.connect)

    def publish(self, topic, msg, retain=False, qos=0):
        self._do(self.mqtt.publish, topic, msg, retain, qos)

    def subscribe(self, topic, qos=0):
        self._do(self.mqtt.subscribe, topic, qos)

    def check_msg(self):
        self._do(self.mqtt.loop, 0.01)

    def wait(self, ms):
        time.sleep(min(ms, 20) / 1000)

    def disconnect(self):
        try:
            self.mqtt.disconnect()
        except (MMQTTException, OSError, RuntimeError):
            self.close()

    def close(self):
        # minimqtt has no public "forget a dead socket": this is what its reconnect() does inside.
        self.mqtt._close_socket()
        self.mqtt._is_connected = False
        self.mqtt._subscribed_topics = []

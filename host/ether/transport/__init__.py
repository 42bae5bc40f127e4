"""Getting bytes between processes: the MQTT connection (``bus``), the embedded or external broker
(``broker``, ``access``), request/reply over the bus (``requests``) and waiting on retained state
(``waiting``)."""

"""Running user code: decorators and signature schemas, the process that hosts one instance
(``instance``), the supervisor that launches and restarts instances, and the session that a script or
``ether run`` holds (``session``, ``services``, ``context``, ``registry``, ``graph``)."""

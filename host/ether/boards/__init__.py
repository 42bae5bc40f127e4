"""The host's side of ``ether_lite`` boards: proxies to call them (``devices``), a board simulated in
a process (``simulator``), the circup/mip bundle (``lite_bundle``) and the USB-serial ``bridge``."""

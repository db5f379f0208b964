"""The Socket.IO protocol (Engine.IO v4 + Socket.IO v5) at ``/socket.io/``, on the hub."""

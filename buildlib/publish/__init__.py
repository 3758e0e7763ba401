"""Publishing to the dnf repository host: :mod:`.publisher` (channels,
metadata, the transport and the whole publish), :mod:`.signing` and
:mod:`.site` (the index page)."""

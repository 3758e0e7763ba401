"""Publishing to the dnf repository host: :mod:`.channels` (which channel a
package goes to, the users' .repo file), :mod:`.rpms` (dist/'s packages,
rpm's version order), :mod:`.repodata` (reading repository metadata, also
for the poll), :mod:`.transport` (the host: local directory or SSH),
:mod:`.signing`, :mod:`.anchor` (the repository's key), :mod:`.site` (the
index page) and :mod:`.publisher` (the publish itself: :mod:`.checks`
inspect a channel, :mod:`.plan` decides, :mod:`.apply` carries it out)."""

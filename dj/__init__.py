"""The DJ's library: find tracks, choose what to play next, find duplicates, and take the
collection to rekordbox, Traktor, playlists and the files' own tags. It reads the agent's
journal (read-only) and works whether the agent runs or not."""

"""The built-in synthetic face world: identities, FACS action-unit geometry and a fast renderer.

``identity`` samples per-subject appearance, ``face`` turns an identity plus 17 AU intensities into
named landmarks in a canonical face frame, and ``render`` draws them (with per-frame nuisances) into
an aligned face crop. ``emotions`` maps emotions to AU configurations, ``world`` simulates the lab
(BP4D/DISFA-like) and wild (RAF-DB-like) domains, ``export`` writes them in the real datasets'
layouts, and ``gallery`` draws a contact sheet.
"""

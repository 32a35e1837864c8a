"""Other video platforms' webhooks: their signatures, and their bodies translated into native
event bodies (CONTRACT section 11). Pure: no I/O; the HTTP edge reads the request, the
simulation signs what it sends, and both call in here.

    escaping    platform room names as session ids, and back
    signatures  the refusal of a missing or wrong signature, and constant-time checks
    jwt_hs256   HS256 JSON Web Tokens (LiveKit signs its webhooks with one)
    fields      reading a platform's fields with errors that name them
    livekit     LiveKit webhooks
    twilio      Twilio Video status callbacks
    agora       Agora Notification Center Service (NCS) callbacks
"""

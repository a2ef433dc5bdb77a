"""intake: validates, authorises, redacts, de-duplicates and stores provider submissions."""

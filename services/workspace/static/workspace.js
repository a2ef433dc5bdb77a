// Progressive enhancement only: every page works without this file.
import { initAll } from '/nhsuk/nhsuk-frontend.min.js'

// The NHS.UK frontend's components start only on a body marked as supporting them (its
// template does this with an inline script, which the CSP forbids; a module script runs
// only where the frontend is supported, so it is the same test).
document.body.classList.add('nhsuk-frontend-supported')
initAll()

// The overview's open concerns refresh in place (a new serious concern shows within
// seconds, no reload). The region is aria-live="polite": screen readers hear the change.
const region = document.querySelector('[data-refresh]')
if (region) {
  const url = region.dataset.refresh
  const every = Math.max(1, Number(region.dataset.interval || 3)) * 1000
  const refresh = async () => {
    try {
      const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      if (response.ok && !response.redirected) {
        const html = await response.text()
        if (html.trim() !== region.innerHTML.trim()) region.innerHTML = html
      }
    } catch (e) {
      // Offline for a moment: try again at the next tick.
    }
    setTimeout(refresh, every)
  }
  setTimeout(refresh, every)
}

// Conditional questions (the public feedback page's email and phone): a radio with
// data-reveals shows its follow-up question while it is chosen. Not the frontend's own
// conditional reveal, which puts aria-expanded on radio buttons (not allowed on them by ARIA
// 1.2; axe-core refuses it). The follow-up comes right after its radio, so it is read next.
const revealing = new Set([...document.querySelectorAll('input[type="radio"][data-reveals]')]
  .map((radio) => radio.name))
for (const name of revealing) {
  const group = document.querySelectorAll(`input[type="radio"][name="${name}"]`)
  const sync = () => {
    for (const radio of group) {
      const target = radio.dataset.reveals && document.getElementById(radio.dataset.reveals)
      if (target) target.classList.toggle('nhsuk-radios__conditional--hidden', !radio.checked)
    }
  }
  for (const radio of group) radio.addEventListener('change', sync)
}
